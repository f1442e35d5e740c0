"""Grouping: sidecars travel with their photo, a RAW+JPEG pair is one decision."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from nordlys.daemon.grouping import PhotoGroup, group_files, split_name

D = Path("/inbox/2026")


def names(group: PhotoGroup) -> list[str]:
    return [p.name for p in group.members]


def test_full_iphone_and_takeout_set_is_one_group_led_by_the_jpeg():
    files = ["IMG_0001.CR2", "IMG_0001.xmp", "IMG_0001.AAE", "IMG_0001.MOV", "IMG_0001.JPG.json",
             "IMG_0001.jpg.xmp", "IMG_0001.JPG"]
    groups = group_files(D / n for n in files)
    assert len(groups) == 1
    assert groups[0].primary == D / "IMG_0001.JPG"
    assert names(groups[0]) == ["IMG_0001.JPG", "IMG_0001.AAE", "IMG_0001.CR2", "IMG_0001.JPG.json",
                                "IMG_0001.jpg.xmp", "IMG_0001.MOV", "IMG_0001.xmp"]


def test_raster_is_primary_whatever_the_order_and_case():
    for order in (["img_7.cr2", "IMG_7.HEIC"], ["IMG_7.HEIC", "img_7.cr2"]):
        (group,) = group_files(D / n for n in order)
        assert group.primary.name == "IMG_7.HEIC"
        assert names(group) == ["IMG_7.HEIC", "img_7.cr2"]


def test_raw_is_primary_only_without_a_raster_image():
    (group,) = group_files([D / "DSC_1.NEF", D / "DSC_1.NEF.xmp", D / "DSC_1.dng", D / "DSC_1.pp3"])
    assert group.primary.name == "DSC_1.dng"  # first RAW by name; the other RAW is the same shot
    assert set(names(group)) == {"DSC_1.NEF", "DSC_1.NEF.xmp", "DSC_1.dng", "DSC_1.pp3"}


def test_same_stem_in_other_folders_is_not_merged():
    groups = group_files([D / "a.jpg", D / "sub" / "a.xmp", D / "sub" / "a.jpg", Path("/other/a.jpg")])
    assert [g.members for g in groups] == [
        (Path("/inbox/2026/a.jpg"),),
        (D / "sub" / "a.jpg", D / "sub" / "a.xmp"),
        (Path("/other/a.jpg"),),
    ]


def test_two_raster_images_with_one_stem_stay_apart_and_named_sidecars_follow_their_image():
    files = ["IMG_1.png", "IMG_1.jpg", "IMG_1.xmp", "IMG_1.png.xmp", "IMG_1.CR2", "IMG_1.PNG.json"]
    groups = group_files(D / n for n in files)
    assert [names(g) for g in groups] == [
        ["IMG_1.jpg", "IMG_1.CR2", "IMG_1.xmp"],  # generic sidecar and RAW: first image by name
        ["IMG_1.png", "IMG_1.PNG.json", "IMG_1.png.xmp"],  # sidecars that name the png
    ]


def test_sidecars_without_an_image_form_their_own_group():
    groups = group_files([D / "lost.xmp", D / "lost.MOV", D / "alone.json"])
    assert [names(g) for g in groups] == [["alone.json"], ["lost.MOV", "lost.xmp"]]
    assert groups[1].primary == D / "lost.MOV"


def test_unknown_suffixes_and_dotfiles_are_groups_by_themselves():
    groups = group_files([D / "IMG_1.jpg", D / "IMG_1.txt", D / ".xmp", D / "IMG_1"])
    assert [names(g) for g in groups] == [[".xmp"], ["IMG_1"], ["IMG_1.jpg"], ["IMG_1.txt"]]


def test_output_is_deterministic_and_duplicates_are_dropped():
    files = [D / n for n in ["b.jpg", "b.xmp", "a.CR2", "a.JPG", "c.png", "a.aae", "B.MOV"]]
    expected = group_files(files)
    for seed in range(5):
        shuffled = files * 2
        random.Random(seed).shuffle(shuffled)
        assert group_files(shuffled) == expected
    assert [names(g) for g in expected] == [["a.JPG", "a.aae", "a.CR2"], ["b.jpg", "B.MOV", "b.xmp"], ["c.png"]]


def test_split_name_keeps_double_suffixes_together():
    assert split_name("IMG_1.JPG.json") == ("IMG_1", ".JPG.json")
    assert split_name("IMG_1.jpg.xmp") == ("IMG_1", ".jpg.xmp")
    assert split_name("IMG_1.xmp") == ("IMG_1", ".xmp")
    assert split_name("trip.2026.jpg") == ("trip.2026", ".jpg")
    assert split_name("notes.tar.json") == ("notes.tar", ".json")  # .tar is no photo suffix
    assert split_name(".xmp") == (".xmp", "")
    assert split_name("README") == ("README", "")


_stems = st.text(alphabet=st.sampled_from("aAbB_ 1é.ß"), min_size=1, max_size=4)
_suffixes = st.sampled_from([".jpg", ".JPG", ".png", ".cr2", ".xmp", ".jpg.json", ".MOV", ".txt", ""])
_dirs = st.sampled_from([Path("/in"), Path("/in/sub")])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_dirs, _stems, _suffixes), max_size=25))
def test_every_path_lands_in_exactly_one_group_in_its_own_folder(specs):
    paths = [d / (s + x) for d, s, x in specs if (s + x) not in (".", "..")]
    groups = group_files(paths)
    members = [m for g in groups for m in g.members]
    assert sorted(members) == sorted(set(paths))
    for g in groups:
        assert g.members[0] == g.primary
        assert len({m.parent for m in g.members}) == 1
        assert len(set(g.members)) == len(g.members)
