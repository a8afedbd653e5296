"""dispatch: a small job dispatcher on Postgres and Redis Streams — testlane's seam example.

A dispatcher round for a queue (:mod:`dispatch.dispatcher`) takes the queue's advisory lock
(:mod:`dispatch.locks`: at most one dispatcher per queue), claims each due job
(:mod:`dispatch.jobs`: ``DELETE ... RETURNING``, so two dispatchers never both get one) and emits
it on a Redis stream, where a consumer group of workers (:mod:`dispatch.stream`) handles each job
once and reclaims the jobs of workers that died. Waits register in a wake index
(:mod:`dispatch.wake_index`: ``ON CONFLICT DO NOTHING``); :mod:`dispatch.queries` holds the SQL
whose correctness is the risk. :mod:`dispatch.broken` keeps a deliberately broken variant of each
guarded piece, to show the seam tests catch it (``pytest --broken all``).

The tests are the point: ``tests/unit`` covers the logic with fakes, ``tests/integration`` pins
the seams on real servers with :mod:`testlane.seams`. See testlane's docs/seams.md.
"""
