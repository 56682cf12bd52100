"""A screenshot of genzoo-demo over saved folders, taken in headless Chromium (Debian's `chromium`, Playwright).

    python benchmarks/demo_screenshot.py FOLDER [FOLDER ...] --prompt "a large red circle at the top left" \
        --output docs/results/demo-screenshot.png

The first folder's tab samples (with `--prompt` when it is text-conditioned); `--edited_prompt` instead runs its
prompt-to-prompt tab from `--prompt` to that prompt, which shows the attention maps.
"""

from __future__ import annotations

import argparse
import socket
import time

from hf_genzoo import demo

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="saved pipeline folders; the first one's tab is shown")
    parser.add_argument("--prompt", default=None, help="for a text-conditioned model")
    parser.add_argument("--edited_prompt", default=None, help="run the prompt-to-prompt tab from --prompt to this")
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--output", default="docs/results/demo-screenshot.png")
    parser.add_argument("--progress_output", default=None, help="also a screenshot taken while it works, --progress_delay s after the click")
    parser.add_argument("--progress_delay", type=float, default=5.0)
    return parser.parse_args()


def progress_shot(page, args):
    if args.progress_output:
        page.wait_for_timeout(1000 * args.progress_delay)
        page.screenshot(path=args.progress_output, full_page=True)


def main():
    from playwright.sync_api import sync_playwright

    args = parse_args()
    app = demo.build_app(args.models, device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **demo.launch_kwargs())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.set_default_timeout(600_000)
            page.goto(url)
            start = time.perf_counter()
            if args.edited_prompt:
                page.get_by_role("tab", name="Prompt-to-prompt").click()
                page.fill("#m0-p2p-source textarea", args.prompt)
                page.fill("#m0-p2p-edited textarea", args.edited_prompt)
                if args.guidance_scale is not None:
                    page.fill("#m0-p2p-guidance input[type=number]", str(args.guidance_scale))
                page.click("#m0-p2p-button")
                progress_shot(page, args)
                page.wait_for_selector("#m0-p2p-maps img")
            else:
                if args.prompt:
                    page.fill("#m0-sample-prompt textarea", args.prompt)
                if args.guidance_scale is not None:
                    page.fill("#m0-sample-guidance input[type=number]", str(args.guidance_scale))
                page.fill("#m0-sample-seed input", str(args.seed))
                page.click("#m0-sample-button")
                progress_shot(page, args)
                page.wait_for_selector("#m0-sample-output img")
            page.wait_for_timeout(500)  # the image fades in
            print(f"the page's answer took {time.perf_counter() - start:.1f} s")
            page.screenshot(path=args.output, full_page=True)
            browser.close()
    finally:
        app.close()
    print("wrote", args.output)


if __name__ == "__main__":
    main()
