"""`silentzone profile NAME`: write params.yaml for a profile; `--show` prints the active one."""

from __future__ import annotations

from pathlib import Path

from . import config, io


def add_arguments(p):
    p.add_argument("name", nargs="?", help="profile name: " + ", ".join(config.profile_names()) if config.PROFILES_DIR.exists() else "profile name")
    p.add_argument("--show", action="store_true", help="print the profile params.yaml was made from")
    p.add_argument("--profiles-dir", default=str(config.PROFILES_DIR))


def run(args):
    if args.show or not args.name:
        print(config.load(args.params).get("profile", "?"))
        return 0
    params = config.build_profile(args.name, Path(args.profiles_dir))
    io.write_text(args.params, config.dump(params))
    print(f"{args.params}: profile {args.name}")
    return 0
