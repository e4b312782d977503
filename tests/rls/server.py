"""A thin rate-limit service for the end-to-end tests and the benchmark: Envoy's
RLS v3 (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) over gRPC,
counting in Redis with the `limits` library (fixed windows, as Limitador counts).

    python tests/rls/server.py --port 0 --redis redis://127.0.0.1:6379 --limits limits.yaml

Prints `READY <port>` on standard output once it listens. The limits file has the
shape of Limitador's (YAML or JSON, a list):

    - namespace: apiguard                      # RateLimitRequest.domain
      max_value: 5                             # requests per window
      seconds: 60                              # window
      conditions: ["descriptors[0].route == 'orders'"]
      variables: ["descriptors[0].caller"]     # one counter per value

A condition is `<entry> == '<value>'` (or `!=`), an entry is named as Limitador's
CEL does (`descriptors[0].route`) or bare (`route`), and is looked up in each
descriptor of the request. A limit applies to a descriptor whose entries satisfy
every condition and hold every variable. A request is admitted only if every
applicable limit of every descriptor has room; then each is counted once
(nothing is counted for a refused request). Redis failing is gRPC UNAVAILABLE.

Not a production service: use Limitador or envoyproxy/ratelimit for that.
"""
import argparse
import asyncio
import datetime
import json
import math
import sys
import time

import grpclib
import grpclib.const
from grpclib.server import Server
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from envoy_data_plane.envoy.service.ratelimit import v3 as rls
from limits_file import load_limits

UNITS = {1: rls.RateLimitResponseRateLimitUnit.SECOND,
         60: rls.RateLimitResponseRateLimitUnit.MINUTE,
         3600: rls.RateLimitResponseRateLimitUnit.HOUR,
         86400: rls.RateLimitResponseRateLimitUnit.DAY}
class RateLimitService(rls.RateLimitServiceBase):
    def __init__(self, limits, redis_url, log_requests=False):
        self.limits = limits
        self.log_requests = log_requests
        self.storage = RedisStorage(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.limiter = FixedWindowRateLimiter(self.storage)

    def applicable(self, domain, entries):
        for lim in self.limits:
            if lim["namespace"] != domain:
                continue
            ok = all((entries.get(k) == v) == (op == "==") for k, op, v in lim["conditions"])
            if ok and all(v in entries for v in lim["variables"]):
                yield lim, [lim["id"]] + [entries[v] for v in lim["variables"]]

    async def should_rate_limit(self, message):
        try:
            return self.decide(message)
        except grpclib.GRPCError:
            raise
        except Exception as e:  # Redis down or hung: the caller's failure_mode decides
            raise grpclib.GRPCError(grpclib.const.Status.UNAVAILABLE, f"storage: {type(e).__name__}")

    def decide(self, message):
        per_descriptor = []
        for d in message.descriptors:
            entries = {e.key: e.value for e in d.entries}
            if self.log_requests:
                print(json.dumps({"domain": message.domain, "entries": entries,
                                  "hits_addend": message.hits_addend}), file=sys.stderr, flush=True)
            per_descriptor.append(list(self.applicable(message.domain, entries)))
        pairs = [pair for found in per_descriptor for pair in found]
        # One limit: counting it is the test (a fixed window past its limit stays
        # past it); several: test them all first, so a refused request counts nowhere.
        over = len(pairs) > 1 and any(not self.limiter.test(lim["item"], *ids) for lim, ids in pairs)
        if not over:
            for found in per_descriptor:
                for lim, ids in found:
                    if not self.limiter.hit(lim["item"], *ids):
                        over = True  # lost a race with another request
        statuses = []
        now = time.time()
        for found in per_descriptor:
            if not found:
                statuses.append(rls.RateLimitResponseDescriptorStatus(code=rls.RateLimitResponseCode.OK))
                continue
            # The limit closest to exhaustion speaks for the descriptor.
            best = None
            for lim, ids in found:
                reset, remaining = self.limiter.get_window_stats(lim["item"], *ids)
                if best is None or remaining < best[1]:
                    best = (lim, remaining, reset)
            lim, remaining, reset = best
            code = (rls.RateLimitResponseCode.OVER_LIMIT if over and remaining == 0
                    else rls.RateLimitResponseCode.OK)
            statuses.append(rls.RateLimitResponseDescriptorStatus(
                code=code,
                current_limit=rls.RateLimitResponseRateLimit(
                    requests_per_unit=lim["max_value"],
                    unit=UNITS.get(lim["seconds"], rls.RateLimitResponseRateLimitUnit.UNKNOWN)),
                limit_remaining=max(0, remaining),
                duration_until_reset=datetime.timedelta(
                    seconds=max(1, min(lim["seconds"], math.ceil(reset - now))))))
        overall = rls.RateLimitResponseCode.OVER_LIMIT if over else rls.RateLimitResponseCode.OK
        return rls.RateLimitResponse(overall_code=overall, statuses=statuses)


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--redis", default="redis://127.0.0.1:6379")
    p.add_argument("--limits", required=True)
    p.add_argument("--log-requests", action="store_true",
                   help="one JSON line per descriptor on standard error")
    args = p.parse_args()
    limits = [dict(lim, item=RateLimitItemPerSecond(lim["max_value"], lim["seconds"]))
              for lim in load_limits(args.limits)]
    service = RateLimitService(limits, args.redis, args.log_requests)
    server = Server([service])
    await server.start(args.host, args.port)
    port = server._server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
