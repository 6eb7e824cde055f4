"""``python -m benchmarks``: the speed benchmarks (minutes); writes BENCHMARKS.md.

python -m benchmarks [--only step,is,is-small,scaling,startup,sweep] [--device cuda]
                     [--threads 2]
                     [--toy]
"""

from __future__ import annotations

from benchmarks import importance, scaling, small_k, startup, step, sweep_overhead
from benchmarks.cli import Runner, finish, options_from, parser

SECTIONS: dict[str, Runner] = {
    "step": step.run,
    "is": importance.run,
    "is-small": small_k.run,
    "scaling": scaling.run,
    "startup": startup.run,
    "sweep": sweep_overhead.run,
}


def main(argv: list[str] | None = None) -> None:
    p = parser("Speed benchmarks against plain-PyTorch floors.")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections among {', '.join(SECTIONS)} (default: all)",
    )
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choices: {', '.join(SECTIONS)}")
    finish(args, options_from(args), {key: SECTIONS[key] for key in chosen})


if __name__ == "__main__":
    main()
