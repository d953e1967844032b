"""The Docker Engine API routes, one module per resource; each exports ``routes``, an aiohttp
``RouteTableDef`` whose handlers decode the request, call one engine verb through
``request.app["backend"]`` and encode Docker's JSON."""
