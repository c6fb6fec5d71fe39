"""Pipeline stages: each a `run(params, layout, ...)` that reads earlier stages' outputs (never their
code) and writes its own. The CLI (silentzone.cli) calls them; nothing imports a stage."""
