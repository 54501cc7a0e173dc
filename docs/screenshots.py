"""Take the README's pictures of `memo ui` from a registry (the demo's), in headless Chromium.

    memo --home /tmp/memo-demo demo
    python docs/screenshots.py /tmp/memo-demo      # writes docs/ui-home.png, ui-merge.png, ui-retention.png

Needs chromium and chromedriver (apt-get install chromium chromium-driver) and selenium.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from registry import Registry
from registry.ui import listen, serve

DOCS = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("home", type=Path)
    args = ap.parse_args()
    with Registry.open(args.home) as reg:
        merge = reg.get_channel("production").current_merge_id
        sock = listen("127.0.0.1", 0)
        threading.Thread(target=serve, args=(reg, sock), daemon=True).start()
        time.sleep(1.0)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,900"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
        try:
            for name, path in (("home", "/"), ("merge", f"/merges/{merge}"), ("retention", "/retention")):
                driver.get(base + path)
                driver.save_screenshot(str(DOCS / f"ui-{name}.png"))
                print(f"docs/ui-{name}.png  <- {path}")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
