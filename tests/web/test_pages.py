"""The pages, thumbnails and /metrics of a real `nordlys web` over a tree `nordlys sort` filed."""

from __future__ import annotations

import re
import shutil

from PIL import Image

from nordlys.web.thumbs import ThumbCache
from tests.daemon.test_watch import photo
from tests.web.conftest import csrf_of


def test_pages_show_counts_queue_recent_decisions_and_the_photo(tree, web):
    tree.sort(green=2, grey=3)
    server = web()
    review = tree.files("review")
    with server.client() as client:
        overview = client.get("/").text
        assert re.search(r'class="n">2</span><span>aurora/', overview)
        assert re.search(r'class="n">3</span><span>review/', overview)
        assert "green-test-1" in overview and "nordlys watch is not running" in overview
        queue = client.get("/review").text
        for p in review:  # everything in review/, then the least certain filings
            assert f'data-rel="review/{p.name}"' in queue
        assert queue.index("review/") < queue.index('data-rel="aurora/')
        recent = client.get("/recent", params={"folder": "aurora"}).text
        assert recent.count("<td>aurora</td>") == 2 and "<td>review</td>" not in recent
        high = client.get("/recent", params={"min": "0.9"}).text
        assert high.count("<td>aurora</td>") == 2 and "<td>review</td>" not in high
        nothing = client.get("/recent", params={"from": "2000-01-01", "to": "2000-01-02"}).text
        assert "No decisions match" in nothing
        page = client.get(f"/photo/review/{review[0].name}").text
        assert "done" in page and str(tree.inbox / review[0].name) in page and 'value="aurora"' in page


def test_thumbnails_are_made_by_the_loader_cached_and_served_with_caching_headers(tree, web):
    tree.sort(green=1, grey=0)
    server = web()
    rel = tree.files("aurora")[0].relative_to(tree.root).as_posix()
    with server.client() as client:
        first = client.get(f"/thumb/{rel}")
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        assert "max-age" in first.headers["cache-control"] and first.headers["etag"]
        again = client.get(f"/thumb/{rel}", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304
    cached = list((tree.state / "thumbs").glob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.content


def test_heic_and_raw_thumbnails(tree, web, shared_samples):
    tree.sort(green=1, grey=0)
    review = tree.root / "review"
    review.mkdir(exist_ok=True)
    samples = [next((shared_samples / "heic").glob("*.heic")), next((shared_samples / "raw").glob("*.dng"))]
    for sample in samples:
        shutil.copy(sample, review / sample.name)
    server = web()
    with server.client() as client:
        for sample in samples:
            response = client.get(f"/thumb/review/{sample.name}")
            assert response.status_code == 200, sample.name
            assert response.headers["content-type"] == "image/jpeg"
    assert len(list((tree.state / "thumbs").glob("*.jpg"))) == 2


def test_thumbnail_cache_stays_within_its_bound(tmp_path):
    photos = []
    for i in range(6):
        p = tmp_path / f"p{i}.jpg"
        Image.new("RGB", (640, 480), (i * 40, 90, 200 - i * 30)).save(p, "JPEG")
        photos.append(p)
    cache = ThumbCache(tmp_path / "thumbs", max_bytes=1, max_file_bytes=1 << 30, max_pixels=10**8)
    one = len(cache.get(photos[0]))
    assert len(list((tmp_path / "thumbs").glob("*.jpg"))) == 1  # the one just made is kept, even over the bound
    cache = ThumbCache(tmp_path / "thumbs", max_bytes=3 * one, max_file_bytes=1 << 30, max_pixels=10**8)
    for p in photos:
        cache.get(p)
    sizes = [f.stat().st_size for f in (tmp_path / "thumbs").glob("*.jpg")]
    assert 1 <= len(sizes) < len(photos) and sum(sizes) <= 3 * one
    assert (tmp_path / "thumbs" / f"{cache.key(photos[-1])}.jpg").exists()  # the newest is kept


def test_a_file_that_is_no_photo_gets_404_not_a_crash(tree, web):
    tree.sort(green=1, grey=0)
    bad = tree.root / "aurora" / "broken.jpg"
    bad.write_bytes(photo(9, green=True)[:200])
    server = web()
    with server.client() as client:
        assert client.get("/thumb/aurora/broken.jpg").status_code == 404
        assert client.get("/").status_code == 200
    assert server.log_has('"no thumbnail"')


def test_metrics_in_prometheus_format(tree, web):
    tree.sort(green=2, grey=3)
    (tree.inbox / "late.jpg").write_bytes(photo(50, green=True))
    server = web()
    with server.client() as client:
        text = client.get("/metrics").text
        rel = tree.files("review")[0].relative_to(tree.root).as_posix()
        client.post("/act/move", data={"rel": rel, "to": "other", "csrf": csrf_of(client)})
        after = client.get("/metrics").text
    assert 'nordlys_photos_filed_total{folder="aurora"} 2.0' in text
    assert 'nordlys_photos_filed_total{folder="review"} 3.0' in text
    assert f'nordlys_inbox_backlog{{inbox="{tree.inbox}"}} 1.0' in text
    assert 'nordlys_model_info{version="green-test-1"} 1.0' in text
    assert "nordlys_rejections_total 0.0" in text and "nordlys_errors_total 0.0" in text
    assert 'nordlys_close_to_moved_seconds_bucket{le="+Inf"} 5.0' in text
    assert 'nordlys_photos_filed_total{folder="other"} 1.0' in after
