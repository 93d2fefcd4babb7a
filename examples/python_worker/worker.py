#!/usr/bin/env python3
"""A floodway worker in Python, with the standard library only.

It long-polls a `floodway serve` for tasks, runs a handler per task kind, and settles each
lease: ack on success, fail (retried with backoff by the server) on an exception, fail for good
on a PermanentError. Leases that would run out while a batch is still being worked are extended.
Acks go back in one batch per reservation. It honours Retry-After on 429 and backs off on 503.

    FLOODWAY_TOKEN=fw_... python3 worker.py --server http://127.0.0.1:7700 --queue math

See README.md next to this file for the API calls it makes.
"""

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request


class PermanentError(Exception):
    """A failure that retrying cannot fix: the task goes to the dead letters."""


# The handlers: one function per task kind, taking the JSON payload. Return a value to
# complete the task; raise to fail it.
def add(payload):
    return payload["a"] + payload["b"]


def flaky(payload, attempt):
    # Fails its first attempt, to show retries: the server schedules the task again.
    if attempt == 1:
        raise RuntimeError("flaky: the first attempt always fails")
    return payload


def reject(payload):
    raise PermanentError("this input can never succeed")


HANDLERS = {
    "add": lambda task: add(task["payload"]),
    "flaky": lambda task: flaky(task["payload"], task["attempt"]),
    "reject": lambda task: reject(task["payload"]),
}


class ApiError(Exception):
    """An error answer of the server: {"error": {"code", "message"}}."""

    def __init__(self, status, code, message, retry_after):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.retry_after = retry_after


class Client:
    """The few calls a worker needs, as JSON over HTTP."""

    def __init__(self, server, token, timeout):
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, path, body, extra_timeout=0.0):
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout + extra_timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            retry_after = error.headers.get("Retry-After")
            try:
                detail = json.load(error)["error"]
                code, message = detail["code"], detail["message"]
            except (ValueError, KeyError):
                code, message = "http_error", str(error)
            raise ApiError(error.code, code, message, float(retry_after) if retry_after else None)

    def reserve(self, queue, max_tasks, wait, lease, worker):
        body = {"max": max_tasks, "wait": wait, "lease": lease, "worker": worker}
        wait_seconds = int(wait.rstrip("s"))
        return self.call(f"/v1/queues/{queue}/reserve", body, extra_timeout=wait_seconds)["tasks"]

    def ack(self, tokens):
        return self.call("/v1/leases/ack", {"leases": tokens})["results"]

    def fail(self, token, error, permanent):
        return self.call(
            "/v1/leases/fail", {"lease": token, "error": error, "permanent": permanent}
        )

    def extend(self, tokens, duration):
        return self.call("/v1/leases/extend", {"leases": tokens, "duration": duration})["results"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("FLOODWAY_SERVER", "http://127.0.0.1:7700"))
    parser.add_argument("--queue", required=True)
    parser.add_argument("--batch", type=int, default=10, help="most tasks per reservation")
    parser.add_argument("--lease", type=int, default=30, help="lease length in seconds")
    parser.add_argument("--max-tasks", type=int, default=0,
                        help="stop after this many tasks finished, completed or dead (0: run until SIGTERM)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    args = parser.parse_args()

    client = Client(args.server, os.environ.get("FLOODWAY_TOKEN"), args.timeout)
    worker = f"python-{os.getpid()}"
    counts = {"completed": 0, "retried": 0, "dead": 0, "refused": 0}
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    backoff = 0.1

    def finished():
        return counts["completed"] + counts["dead"]

    while not stopping and not (args.max_tasks and finished() >= args.max_tasks):
        try:
            tasks = client.reserve(args.queue, args.batch, "5s", f"{args.lease}s", worker)
            backoff = 0.1
        except ApiError as error:
            if error.status in (429, 503):
                time.sleep(error.retry_after or backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            print(f"no answer from {args.server}: {error}; retrying", file=sys.stderr)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue

        done = []
        for reserved in tasks:
            task, lease = reserved["task"], reserved["lease"]
            # Keep the remaining leases alive when a lease is two-thirds gone.
            now_ms = time.time() * 1000
            if lease["expires_at"] - now_ms < args.lease * 1000 / 3:
                client.extend([lease["token"]], f"{args.lease}s")
            handler = HANDLERS.get(task["kind"])
            try:
                if handler is None:
                    raise RuntimeError(f"no handler for kind {task['kind']!r} in the Python worker")
                result = handler(task)
                print(json.dumps({"id": task["id"], "kind": task["kind"], "result": result}), flush=True)
                done.append(lease["token"])
            except Exception as error:  # noqa: BLE001 - every failure is reported to the server
                permanent = isinstance(error, PermanentError)
                try:
                    outcome = client.fail(lease["token"], str(error), permanent)["outcome"]
                    counts["dead" if outcome["state"] == "dead" else "retried"] += 1
                except ApiError as refusal:
                    # A stale or expired lease: another worker has the task now.
                    print(f"fail refused: {refusal}", file=sys.stderr)
                    counts["refused"] += 1
        if done:
            for result in client.ack(done):
                counts["completed" if result["ok"] else "refused"] += 1

    print(json.dumps(counts), file=sys.stderr)


if __name__ == "__main__":
    main()
