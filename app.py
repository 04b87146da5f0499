"""Start the RocketQA workbench app: `python app.py [--data DIR] [--run DIR] ...` (see demo/config.py)."""

from __future__ import annotations

import logging
import sys

from demo import build_app, launch
from demo.config import load_config
from demo.services import load_services


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(sys.argv[1:] if argv is None else argv)
    services = load_services(config)
    launch(build_app(services), host=config.host, port=config.port)


if __name__ == "__main__":
    main()
