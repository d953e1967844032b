"""The image builder: a Dockerfile frontend (text -> stages of typed instructions, a build plan)
and an executor (steps -> layers and an image config).

The frontend modules (``dockerfile``, ``instructions``, ``expand``, ``args``, ``plan``,
``dockerignore``, ``context``) know nothing of storage, images or containers; the executor
calls them, never the other way round.
"""
