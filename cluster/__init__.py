"""nordlys.cluster: score archives on a Ray cluster, then file them on one machine (issue 16).

Optional (`pip install 'nordlys[cluster]'`): ray and pyarrow. It uses the daemon's base (loader,
Classifier, hash, pipeline, mover, journal) and the daemon never imports it.
"""
