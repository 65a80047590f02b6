"""The MLflow UI on a search's runs, opened where the scores are.

    python -m nli_tune.ui [--output outputs]

Starts `mlflow server` on the search's tracking store, bound to 127.0.0.1 with MLflow's
background job consumers off (this project has no jobs for them), and prints the URL of
the search's experiment: its runs table with the scores as columns.

MLflow 3.17 picks a page's view (GenAI or model training) from one browser-wide switch,
stored per browser, which also reads a `workflowType` in the URL; the experiment's
`mlflow.experimentKind` tag only says what the experiment is (3.17's UI labels it). The
columns come from a shared view (an experiment tag MLflow's "share view" reads), named in
the URL; with neither, a new browser opens on the GenAI overview and a runs table without
scores. The search sets both tags (`experiment_tags`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from nli_tune.core.errors import UserError, first_line, run_cli
from nli_tune.study.run_files import IDENTITY_FILE
from nli_tune.tracking.views import experiment_url


def find_search(output: Path) -> Path:
    """The search folder: `output` itself, or the newest search folder in it."""
    if (output / IDENTITY_FILE).is_file():
        return output
    found = sorted(output.glob(f"*/{IDENTITY_FILE}"), key=lambda p: p.stat().st_mtime)
    if not output.is_dir() or not found:
        raise UserError(
            f"--output {output}: no search there (no {IDENTITY_FILE}); pass the folder "
            f"`python -m nli_tune.search --output` wrote, or one of its search folders"
        )
    if len(found) > 1:
        others = ", ".join(p.parent.name for p in found[:-1])
        print(
            f"newest search: {found[-1].parent.name} (also here: {others}; pick one with "
            f"--output {output}/NAME)"
        )
    return found[-1].parent


def tracking_uri(run_dir: Path) -> str:
    """The MLflow store the search logged to, as it saved it."""
    saved = json.loads((run_dir / IDENTITY_FILE).read_text()).get("mlflow_uri")
    if not saved:
        raise UserError(
            f"{run_dir / IDENTITY_FILE}: no MLflow URI saved (an older nli_tune ran this "
            f"search); pass --mlflow-uri"
        )
    return saved


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.ui",
        description="Start the MLflow UI on a search's runs (127.0.0.1 only, MLflow's job "
        "consumers off) and print the URL of its runs table: one parent run per search with "
        "its best score and trial counts, its trials nested under it (expand the row) with "
        "their cross-fold scores. Ctrl-C stops it. For the Optuna study: optuna-dashboard "
        "sqlite:///OUTPUT/NAME/optuna.db",
    )
    p.add_argument(
        "--output",
        default="outputs",
        help="the search's --output folder (its newest search) or one search's folder "
        "(default outputs)",
    )
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.add_argument(
        "--mlflow-uri",
        help="tracking store (default: the one the search logged to, from its search.json)",
    )
    return p.parse_args(argv)


def experiment_id(uri: str, name: str) -> str:
    import logging

    from mlflow import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        exp = MlflowClient(uri).get_experiment_by_name(name)
    except Exception as err:
        reason = first_line(err)
        raise UserError(f"{uri}: MLflow cannot read it ({type(err).__name__}: {reason})") from None
    if exp is None:
        raise UserError(f"{uri}: no experiment '{name}' (did the search log elsewhere?)")
    return exp.experiment_id


def serve(uri: str, port: int, url: str) -> int:
    """Run `mlflow server` until Ctrl-C; its own log goes to a file, shown if it fails."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise UserError(f"--port {port}: something already listens there; pick another")
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow_bin, "server", "--backend-store-uri", uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = Path(tempfile.gettempdir()) / f"nli_tune-mlflow-ui-{port}.log"
    with open(log, "w") as out:  # its own process group: stopped whole, below
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    signal.signal(signal.SIGTERM, _interrupt)  # a kill of this process stops it too
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                tail = "\n".join(log.read_text().splitlines()[-20:])
                print(tail, file=sys.stderr)
                raise UserError(f"mlflow server exited ({proc.returncode}); its log: {log}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise UserError(
                        f"mlflow server did not answer in 180 s; its log: {log}"
                    ) from None
                time.sleep(0.5)
        print(f"MLflow UI: {url}", flush=True)
        print("(Ctrl-C stops it)", flush=True)
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the way to stop it, not an error
            return 0
    finally:
        _stop(proc)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left 10 s later (seen:
    `mlflow server` lingers 25 s after its workers are gone, and a caller that gives up
    on this process first would leave it running)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.time() + 10
        while _group_alive(proc):
            if sig is not None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:  # gone since it was looked at
                    return
                sig = None
            if time.time() > deadline:
                break
            time.sleep(0.2)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reaps the leader once it exits, so only live members count
    try:
        os.killpg(proc.pid, 0)
        return True
    except ProcessLookupError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be 1..65535")
    run_dir = find_search(Path(args.output))
    uri = args.mlflow_uri or tracking_uri(run_dir)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise UserError(f"{uri}: no such file (moved? pass --mlflow-uri sqlite:///PATH)")
    exp_id = experiment_id(uri, run_dir.name)
    if uri.startswith(("http://", "https://")):  # a server already runs: only say where
        print(f"MLflow UI: {experiment_url(uri, exp_id)}")
        return 0
    return serve(uri, args.port, experiment_url(f"http://127.0.0.1:{args.port}", exp_id))


if __name__ == "__main__":
    sys.exit(run_cli(main))
