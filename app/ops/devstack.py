"""`python -m app up`: the whole stack on one machine, with embedded Redis/MongoDB when none answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from secrets import token_urlsafe
from urllib.parse import urlparse, urlunparse

from app.config import resolve_secrets, secrets_path, settings
from app.ops import embedded
from app.services.auth import mint_token

ROOT = Path(__file__).resolve().parents[2]  # the checkout
DATA = Path(settings.data_dir)


def _with_port(url: str, port: int) -> str:
    parts = urlparse(url)
    host = parts.hostname or "127.0.0.1"
    return urlunparse(parts._replace(netloc=f"{host}:{port}"))


def procfile_names() -> list[str]:
    """The Procfile's process names, in order."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line and not line.lstrip().startswith("#")]


def flower_basic_auth(env: dict[str, str]) -> tuple[str, bool]:
    """FLOWER_BASIC_AUTH (user:password) from the environment, else a random one for this run (the
    Procfile's Flower refuses to start without one); and whether it was generated."""
    given = env.get("FLOWER_BASIC_AUTH", "").strip()
    return (given, False) if given else (f"admin:{token_urlsafe(18)}", True)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stack(with_flower: bool = True) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # stop the embedded services on SIGTERM too
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started: list[subprocess.Popen[bytes]] = []
    DATA.mkdir(parents=True, exist_ok=True)
    # TOKEN_SECRET / ADMIN_SECRET from the environment, else generated once into DATA (kept across runs,
    # so tokens stay valid); the processes get them in their environment, `python -m app token` from the file.
    keys = resolve_secrets(settings, generate=True)
    env["TOKEN_SECRET"], env["ADMIN_SECRET"] = keys.token_secret, keys.admin_secret
    try:
        redis_url = settings.redis_url
        if not embedded.redis_answers(redis_url):
            port = embedded.url_port(redis_url, 6379)
            print(f"no Redis at {redis_url}: starting the embedded one on port {port}")
            started.append(embedded.start_redis(port, DATA / "redis", DATA / "redis.log"))
            redis_url = _with_port(redis_url, port)
        mongo_url = settings.mongo_url
        if not embedded.mongo_answers(mongo_url):
            port = embedded.url_port(mongo_url, 27017)
            print(f"no MongoDB at {mongo_url}: starting embedded SecantusDB on port {port}")
            started.append(embedded.start_mongo(port, DATA / "mongo", DATA / "mongo.log"))
        env["REDIS_URL"] = redis_url
        env["MONGO_URL"] = mongo_url

        base = f"ws://{settings.gateway_host}:{settings.gateway_port}"
        print("\nstack starting; connect a client with:")
        print(f"  gateway   {base}/?sendID=alice&platformID=7&sdkType=json&token=<token>")
        print(f"  token     {mint_token('alice', 7, secret=keys.token_secret)}")
        print("            (more: python -m app token USER PLATFORM_ID, e.g. python -m app token bob 7)")
        if keys.source != "environment":
            print(f"  secrets   {secrets_path(settings)} (TOKEN_SECRET, ADMIN_SECRET; keep it private)")
        print("  chat      python -m app chat alice bob      (and in another terminal: python -m app chat bob alice)")
        env["FLOWER_BASIC_AUTH"], generated = flower_basic_auth(env)
        login = f"user:password {env['FLOWER_BASIC_AUTH']}" if generated else "login from FLOWER_BASIC_AUTH"
        print(f"  flower    http://127.0.0.1:{settings.flower_port}  ({login})\n", flush=True)

        cmd = [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)]
        if not with_flower:
            cmd += [name for name in procfile_names() if name != "flower"]
            # Task events only feed Flower: without it each worker would publish three per task for nobody
            # (about 6% of a transfer worker's CPU under load). CELERY_TASK_EVENTS=1 keeps them.
            env.setdefault("CELERY_TASK_EVENTS", "0")
        honcho = subprocess.Popen(cmd, env=env)
        try:
            return honcho.wait()
        except KeyboardInterrupt:
            honcho.send_signal(signal.SIGINT)
            return honcho.wait()
    finally:
        embedded.stop_processes(started, timeout=10)
