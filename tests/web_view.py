"""The web view as a person uses it: Debian's Chromium (never a downloaded browser), driven by
Playwright, against a running gradcam-stream --web. Each subcommand checks one thing, prints
its figures as one JSON line and exits non-zero (with the reason) when the check fails.

    web_view.py overview URL --streams a=640x360,b=320x240 [--seconds 20] [--max-p95 1000]
    web_view.py stream URL NAME --top-k 3 [--screenshot FILE]
    web_view.py viewers URL NAME --count 10
    web_view.py recordings URL
    web_view.py record-ws URL NAME --seconds 5 --out FILE   (a raw WebSocket client, no browser)
    web_view.py stall URL NAME --seconds 12                (connects, never reads)
    web_view.py latency URL --streams a,b --seconds 20     (figures only: make bench)
    web_view.py clients URL NAME --count 50 --seconds 15   (raw WebSocket viewers: make bench)
Options for all: --user USER:PASSWORD (HTTP Basic), --insecure (a self-signed certificate).
"""

import argparse
import base64
import json
import os
import socket
import ssl
import sys
import tempfile
import time
from urllib.parse import urlparse

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--mute-audio"]


def fail(why, **figures):
    print(json.dumps({"ok": False, "why": why, **figures}))
    sys.exit(1)


# What the pages' Content-Security-Policy refused, in any tab: a browser command fails on any.
REFUSED = []


def browser(p, args):
    profile = tempfile.mkdtemp(prefix="gradcam-chromium-")
    ctx = p.chromium.launch_persistent_context(
        profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
        viewport={"width": 1280, "height": 900},
        http_credentials=credentials(args), ignore_https_errors=args.insecure)
    ctx.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                        "console.error(`csp refused: ${e.violatedDirective} ${e.blockedURI}`));")

    def watch(page):
        page.on("console", lambda m: REFUSED.append(m.text) if "csp refused" in m.text
                or "Content Security Policy" in m.text else None)
    ctx.on("page", watch)
    for page in ctx.pages:
        watch(page)
    return ctx


def passed(figures):
    """The browser commands' end: fails where the page's policy refused anything it loads."""
    if REFUSED:
        fail(f"the Content-Security-Policy refused: {REFUSED[:3]}", figures=figures)
    print(json.dumps({"ok": True, "figures": figures}))


def credentials(args):
    if not args.user:
        return None
    user, password = args.user.split(":", 1)
    return {"username": user, "password": password}


def wait_until(page, js, seconds, what):
    try:
        page.wait_for_function(js, timeout=seconds * 1000)
    except Exception:
        fail(f"{what} within {seconds} s")


PLAYING = "() => { const v = document.querySelector('video'); return v && v.currentTime > 0 && v.videoWidth > 0; }"


def api(args, path):
    """GET a JSON API path, with the run's credentials."""
    import urllib.request
    req = urllib.request.Request(args.url + path)
    if args.user:
        req.add_header("Authorization", "Basic " + base64.b64encode(args.user.encode()).decode())
    ctx = ssl._create_unverified_context() if args.insecure else None
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        return json.load(r)


def dropped(args, name):
    return next(s["dropped"] for s in api(args, "/api/streams") if s["name"] == name)


def video_state(page, name=None):
    sel = f'[data-stream="{name}"] video' if name else "video"
    return page.eval_on_selector(sel, "v => ({t: v.currentTime, w: v.videoWidth, h: v.videoHeight})")


def overview(args):
    from playwright.sync_api import sync_playwright
    want = dict(s.split("=") for s in args.streams.split(","))
    with sync_playwright() as p:
        ctx = browser(p, args)
        page = ctx.new_page()
        page.goto(args.url + "/")
        wait_until(page, f"() => document.querySelectorAll('[data-stream]').length === {len(want)}", 15,
                   f"{len(want)} tiles")
        tiles = page.eval_on_selector_all("[data-stream]", "ts => ts.map(t => t.dataset.stream)")
        if sorted(tiles) != sorted(want):
            fail(f"tiles {tiles}, want {sorted(want)}")
        first = {}
        for name in want:
            wait_until(page, f"() => {{ const v = document.querySelector('[data-stream=\"{name}\"] video'); return v && v.currentTime > 0 && v.videoWidth > 0; }}",
                       20, f"stream {name} playing")
            first[name] = video_state(page, name)
        texts = {n: set() for n in want}
        end = time.time() + args.seconds
        while time.time() < end:
            for name in want:
                texts[name].add(page.inner_text(f'[data-stream="{name}"] .class'))
            time.sleep(0.5)
        figures = {}
        for name, size in want.items():
            now = video_state(page, name)
            w, h = (int(x) for x in size.split("x"))
            stats = page.evaluate(f"() => window.gradcamStats[{json.dumps(name)}]")
            state = page.inner_text(f'[data-stream="{name}"] .state')
            figures[name] = {"advanced_s": round(now["t"] - first[name]["t"], 2), "width": now["w"],
                             "height": now["h"], "class_texts": len(texts[name]), "state": state, **stats}
            if now["t"] - first[name]["t"] < args.seconds * 0.5:
                fail(f"stream {name}'s video advanced {now['t'] - first[name]['t']:.1f} s in {args.seconds} s", figures=figures)
            if (now["w"], now["h"]) != (w, h):
                fail(f"stream {name} plays at {now['w']}x{now['h']}, want {w}x{h}", figures=figures)
            if len(texts[name]) < 2:
                fail(f"stream {name}'s class text never changed: {texts[name]}", figures=figures)
            if stats["latency_p95_ms"] is None or stats["latency_p95_ms"] > args.max_p95:
                fail(f"stream {name}'s latency p95 {stats['latency_p95_ms']} ms is over {args.max_p95} ms", figures=figures)
            if state != "up":
                fail(f"stream {name} shows state {state}", figures=figures)
        ctx.close()
    passed(figures)


def stream(args):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        ctx = browser(p, args)
        page = ctx.new_page()
        page.goto(f"{args.url}/stream/{args.name}")
        wait_until(page, PLAYING, 20, "the stream page playing")
        wait_until(page, "() => +document.getElementById('timeline').dataset.points > 10", 15,
                   "timeline points")
        wait_until(page, f"() => document.querySelectorAll('#topk .row').length === {args.top_k}", 10,
                   f"{args.top_k} top-k bars")
        page.check("#mark-peak")
        wait_until(page, "() => !document.querySelector('.peak').hidden", 5, "the peak marked")
        # A second tab on the same stream plays too, and costs the pipeline no frame.
        before = dropped(args, args.name)
        second = ctx.new_page()
        second.goto(f"{args.url}/stream/{args.name}")
        wait_until(second, PLAYING, 20, "a second tab playing")
        t0 = video_state(page)["t"]
        time.sleep(args.seconds)
        t1 = video_state(page)["t"]
        wait_until(page, "() => /latency p50 \\d+ ms, p95 \\d+ ms/.test(document.getElementById('status').textContent)",
                   5, "the latency in the status line")
        figures = {
            "points": int(page.eval_on_selector("#timeline", "e => e.dataset.points")),
            "bars": page.eval_on_selector_all("#topk .row", "r => r.length"),
            "status": page.inner_text("#status"),
            "first_tab_advanced_s": round(t1 - t0, 2),
            "second_tab_t": video_state(second)["t"],
            "drops_while_second_tab": dropped(args, args.name) - before,
        }
        if t1 - t0 < args.seconds * 0.5:
            fail("the first tab stalled when the second joined", figures=figures)
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        ctx.close()
    passed(figures)


def viewers(args):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        ctx = browser(p, args)
        pages = []
        for _ in range(args.count):
            page = ctx.new_page()
            page.set_viewport_size({"width": 480, "height": 360})
            page.goto(f"{args.url}/")
            pages.append(page)
        for i, page in enumerate(pages):
            wait_until(page, PLAYING, 30, f"viewer {i + 1} playing")
        t0 = [video_state(p)["t"] for p in pages]
        time.sleep(args.seconds)
        t1 = [video_state(p)["t"] for p in pages]
        advanced = [round(b - a, 2) for a, b in zip(t0, t1)]
        if min(advanced) < args.seconds * 0.3:
            fail(f"a viewer stalled: advanced {advanced}")
        ctx.close()
    passed({"viewers": args.count, "advanced_s": advanced})


def recordings(args):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        ctx = browser(p, args)
        page = ctx.new_page()
        page.goto(f"{args.url}/recordings")
        wait_until(page, "() => document.querySelectorAll('#list li[data-file]').length > 0", 10, "a recording listed")
        files = page.eval_on_selector_all("#list li[data-file]", "ls => ls.map(l => l.dataset.file)")
        page.click("#list li[data-file]")
        wait_until(page, "() => { const v = document.getElementById('playback'); return v.currentTime > 0.5 && v.videoWidth > 0; }",
                   20, "the recording playing")
        wait_until(page, "() => document.querySelector('#meta-timeline .uplot') !== null", 10,
                   "the metadata timeline beside the recording")
        ctx.close()
    passed({"files": files})


def ws_connect(url, name, args, read_buffer=None):
    """A WebSocket handshake on a raw socket; returns the socket."""
    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    s = socket.socket()
    if read_buffer:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, read_buffer)
    s.connect((u.hostname, port))
    if u.scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=u.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = ""
    if args.user:
        auth = f"Authorization: Basic {base64.b64encode(args.user.encode()).decode()}\r\n"
    s.sendall((f"GET /live/{name} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            fail("the server closed the WebSocket handshake")
        head += chunk
    status = int(head.split(b" ")[1])
    return s, status


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def ws_messages(s):
    while True:
        b0, b1 = read_exact(s, 2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(read_exact(s, 2), "big")
        elif n == 127:
            n = int.from_bytes(read_exact(s, 8), "big")
        payload = read_exact(s, n)
        yield b0 & 0x0F, payload


def record_ws(args):
    connected = time.time()
    s, status = ws_connect(args.url, args.name, args)
    if status != 101:
        fail(f"the live endpoint answered {status}")
    s.settimeout(10)
    first_frame = None
    end = time.time() + args.seconds
    video = 0
    texts = []
    with open(args.out or os.devnull, "wb") as out:
        for op, payload in ws_messages(s):
            if op == 2:
                out.write(payload)
                video += 1
                if video == 2:  # the init segment, then the first frame
                    first_frame = time.time() - connected
            elif op == 1:
                texts.append(json.loads(payload))
            if time.time() > end:
                break
    verdicts = [t for t in texts if t.get("type") == "verdict"]
    print(json.dumps({"ok": True, "figures": {"video_messages": video, "verdicts": len(verdicts),
                                              "first_frame_s": first_frame,
                                              "init": [t for t in texts if t.get("type") == "init"]}}))


def stall(args):
    """A viewer that connects and never reads: its socket's buffers fill and stay full."""
    s, status = ws_connect(args.url, args.name, args, read_buffer=4096)
    if status != 101:
        fail(f"the live endpoint answered {status}")
    time.sleep(args.seconds)
    s.close()
    print(json.dumps({"ok": True, "figures": {"stalled_s": args.seconds}}))


def clients(args):
    """--count raw WebSocket viewers reading for --seconds (the server's cost of viewers)."""
    import threading
    counts = [0] * args.count

    def viewer(i):
        s, status = ws_connect(args.url, args.name, args)
        if status != 101:
            return
        s.settimeout(10)
        end = time.time() + args.seconds
        for op, _ in ws_messages(s):
            counts[i] += op == 2
            if time.time() > end:
                break
        s.close()

    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(args.count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"ok": min(counts, default=0) > 0, "figures": {"frames": counts}}))


def tile_state(args):
    """Tile NAME shows a state other than up with its reason; the --streams tiles play on."""
    from playwright.sync_api import sync_playwright
    others = dict(s.split("=") for s in args.streams.split(","))
    with sync_playwright() as p:
        ctx = browser(p, args)
        page = ctx.new_page()
        page.goto(args.url + "/")
        sel = f'[data-stream="{args.name}"]'
        wait_until(page, f"() => {{ const t = document.querySelector('{sel}'); return t && t.querySelector('.state').textContent !== 'up' && t.querySelector('.reason').textContent.length > 0; }}",
                   15, f"tile {args.name} showing its state and reason")
        state = page.inner_text(f"{sel} .state")
        reason = page.inner_text(f"{sel} .reason")
        for name in others:
            wait_until(page, f"() => {{ const v = document.querySelector('[data-stream=\"{name}\"] video'); return v && v.currentTime > 0; }}",
                       20, f"stream {name} playing")
            t0 = video_state(page, name)["t"]
            time.sleep(args.seconds)
            advanced = video_state(page, name)["t"] - t0
            # Half the pace the same stream kept in this run before (--baseline-rate: media
            # seconds a wall second), not half of real time: a slow machine plays slower.
            if advanced < args.seconds * 0.5 * args.baseline_rate:
                fail(f"stream {name} advanced {advanced:.1f} s in {args.seconds} s while {args.name} was {state} "
                     f"(its own pace before: {args.baseline_rate:.2f})")
        ctx.close()
    print(json.dumps({"ok": True, "figures": {"state": state, "reason": reason}}))


def tile_loss(args):
    """Tile NAME shows its camera's packet loss over the last minute, above zero, and its
    damaged frames."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        ctx = browser(p, args)
        page = ctx.new_page()
        page.goto(args.url + "/")
        sel = f'[data-stream="{args.name}"] .counts'
        wait_until(page, f"() => {{ const c = document.querySelector('{sel}'); const m = c && "
                         "c.textContent.match(/([0-9.]+)% packets lost \\(last minute\\) · ([0-9]+) damaged/); "
                         "return m && parseFloat(m[1]) > 0 && parseInt(m[2]) > 0; }",
                   20, f"tile {args.name} showing its packet loss")
        text = page.inner_text(sel)
        ctx.close()
    print(json.dumps({"ok": True, "figures": {"counts": text}}))


def latency(args):
    from playwright.sync_api import sync_playwright
    names = args.streams.split(",")
    with sync_playwright() as p:
        ctx = browser(p, args)
        page = ctx.new_page()
        page.goto(args.url + "/")
        wait_until(page, f"() => document.querySelectorAll('[data-stream]').length === {len(names)}", 15, "the tiles")
        time.sleep(args.seconds)
        stats = page.evaluate("() => window.gradcamStats")
        ctx.close()
    print(json.dumps({"ok": True, "figures": stats}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command")
    ap.add_argument("url")
    ap.add_argument("name", nargs="?")
    ap.add_argument("--streams")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--baseline-rate", type=float, default=1.0)
    ap.add_argument("--max-p95", type=float, default=1000)
    ap.add_argument("--top-k", type=int, default=1)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--screenshot")
    ap.add_argument("--out")
    ap.add_argument("--user")
    ap.add_argument("--insecure", action="store_true")
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    commands = {"overview": overview, "stream": stream, "viewers": viewers, "recordings": recordings,
                "record-ws": record_ws, "stall": stall, "latency": latency, "tile-state": tile_state,
                "tile-loss": tile_loss,
                "clients": clients}
    if args.command not in commands:
        fail(f"unknown command {args.command}; use {', '.join(commands)}")
    commands[args.command](args)


if __name__ == "__main__":
    main()
