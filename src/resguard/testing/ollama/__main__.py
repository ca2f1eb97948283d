"""``python -m resguard.testing.ollama [--port N] [--bind ADDRESS] [--vram-percent P]``:
serve the stand-in until interrupted."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from resguard.testing.ollama import CATALOGUE, OllamaStandIn


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resguard.testing.ollama",
        description="A stand-in Ollama server for tests (the default catalogue of models).",
    )
    parser.add_argument("--port", type=int, default=11434, help="0: any free port")
    parser.add_argument("--bind", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--max-loaded", type=int, default=3, help="models loaded at once")
    parser.add_argument(
        "--vram-percent",
        type=float,
        default=0.0,
        help="the share of each model /api/ps reports on the GPU (size_vram), 0-100",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.vram_percent <= 100:  # also refuses nan
        parser.error(f"--vram-percent {args.vram_percent!r}: expected 0 to 100")
    catalogue = [
        dataclasses.replace(m, vram_bytes=round(m.loaded_bytes * args.vram_percent / 100))
        for m in CATALOGUE
    ]
    try:
        server = OllamaStandIn(
            catalogue, bind=args.bind, port=args.port, max_loaded=args.max_loaded
        )
    except (ValueError, TypeError) as error:  # InvalidValue, InvalidType: a usage error
        parser.error(str(error))
    try:
        server.start()
    except OSError as error:
        print(f"cannot listen on {args.bind}:{args.port}: {error}", file=sys.stderr)
        return 2
    print(f"Ollama stand-in serving on {server.host} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
