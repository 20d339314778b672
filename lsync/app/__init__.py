"""``lsync app``: a local web page for lip-syncing, on the same inference as ``lsync infer``.

* :mod:`lsync.app.jobs` - what the page does, without the page: model loading once per server, one folder per
  run, previews, runs and batches, progress with rate and ETA, errors as the CLI's one-line messages. No Gradio.
* :mod:`lsync.app.page` - the Gradio page over it, and serving it (Gradio is the optional ``[app]`` extra,
  imported only when the server starts).
"""
