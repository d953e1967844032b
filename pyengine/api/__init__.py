"""The daemon: the engine served over the Docker Engine API (``pyengine daemon``).

``app`` builds the aiohttp application from the route tables in ``routes/``; ``http`` holds the
helpers every route uses (Docker's error bodies, query parsing, streams, connection takeover);
``backend`` owns the engine the routes call; ``server`` owns listeners, TLS and signals. Routes
are thin: HTTP in, one engine verb, Docker's JSON out.
"""
