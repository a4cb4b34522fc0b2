#!/usr/bin/env python3
"""MQTT offload throughput beside raw paho throughput, through one mosquitto, in one run.

    python3 tools/bench_mqtt.py [--segments 3] [--segment-mb 8] [--runs 3] [--json]

1. offload: a simulated recorder (the firmware in MicroPython) records `segments` segments,
   then the dock offloads them over MQTT into a fresh vault (host_agent.dock.session.dock); the
   figure is the session's own offload MB/s (segment bytes stored / offload seconds).
2. raw paho: one paho client publishes the same number of bytes as 32 KiB QoS 1 messages,
   another receives them through the same broker; MB/s from the first publish to the last
   message received.

The machine is noisy: read the ratio of the two medians, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt  # noqa: E402

from host_agent.dock.session import DockSession, dock  # noqa: E402
from host_agent.lab.broker import Mosquitto  # noqa: E402
from host_agent.lab.simulator import SimConfig, SimulatedRecorder  # noqa: E402
from host_agent.lab.unit import lab_unit  # noqa: E402
from host_agent.transport.mqtt import MqttTransport  # noqa: E402
from host_agent.vault import Vault  # noqa: E402

CHUNK = 32 * 1024
# paho 2.2 logs an ERROR from its loop thread after every clean disconnect: noise here.
logging.getLogger("bodycam.mqtt.paho").setLevel(logging.CRITICAL)


def bench_offload(broker: Mosquitto, work: Path, segments: int, segment_mb: int,
                  run: int) -> dict[str, float]:
    device_id = f"BENCH-{run}"
    unit, identity = lab_unit(work / "pki", "bench-dock")
    config = SimConfig(segments=segments, segment_ms=1000, bitrate=segment_mb * 8_000_000,
                       mqtt=f"{broker.host}:{broker.port}", device_id=device_id,
                       unit_key=unit.public.hex())
    with SimulatedRecorder(work / f"dev{run}", config, work / f"dev{run}.log") as rec, \
            Vault.open(work / f"vault{run}") as vault:
        transport = MqttTransport(broker.host, broker.port, device_id)
        transport.open()
        try:
            report = dock(DockSession(transport, vault, identity, enroll_unknown=True,
                                      timeout=30.0))
        except Exception:
            print(rec.log_text(), file=sys.stderr)
            raise
        finally:
            transport.close()
    off = report.offload
    return {"bytes": off["bytes"], "seconds": off["seconds"], "mb_per_s": off["mb_per_s"],
            "resumed_reads": off["resumed_reads"]}


def _client(broker: Mosquitto, name: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    up = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: up.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    if not up.wait(10):
        raise RuntimeError(f"{name} could not connect to {broker.host}:{broker.port}")
    return c


def bench_paho(broker: Mosquitto, total_bytes: int, run: int) -> dict[str, float]:
    count = max(1, total_bytes // CHUNK)
    topic = f"bench/raw/{run}"
    sub, pub = _client(broker, f"bench-sub-{run}"), _client(broker, f"bench-pub-{run}")
    got = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(cl: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got == count:
            done.set()

    sub.on_message = on_message
    sub.on_subscribe = lambda cl, u, mid, rcs, p: subscribed.set()
    sub.subscribe(topic, qos=1)
    subscribed.wait(10)
    payload = bytes(CHUNK)
    try:
        t0 = time.perf_counter()
        infos = [pub.publish(topic, payload, qos=1) for _ in range(count)]
        if not done.wait(120):
            raise RuntimeError(f"raw paho: {got} of {count} messages arrived")
        seconds = time.perf_counter() - t0
        for info in infos:
            info.wait_for_publish(10)
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()
    return {"bytes": count * CHUNK, "seconds": seconds,
            "mb_per_s": count * CHUNK / seconds / 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--segments", type=int, default=3)
    p.add_argument("--segment-mb", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    offload: list[dict[str, float]] = []
    raw: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        work = Path(tmp)
        with Mosquitto(work / "broker") as broker:
            for run in range(args.runs):
                offload.append(bench_offload(broker, work, args.segments, args.segment_mb, run))
                raw.append(bench_paho(broker, int(offload[-1]["bytes"]), run))
    off_med = statistics.median(r["mb_per_s"] for r in offload)
    raw_med = statistics.median(r["mb_per_s"] for r in raw)
    result = {
        "segments": args.segments,
        "segment_mb": args.segment_mb,
        "runs": args.runs,
        "offload_mb_per_s": [round(r["mb_per_s"], 1) for r in offload],
        "raw_paho_mb_per_s": [round(r["mb_per_s"], 1) for r in raw],
        "offload_median_mb_per_s": round(off_med, 1),
        "raw_paho_median_mb_per_s": round(raw_med, 1),
        "ratio_offload_to_raw": round(off_med / raw_med, 3) if raw_med else None,
        "resumed_reads": sum(int(r["resumed_reads"]) for r in offload),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"MQTT through one mosquitto, {args.runs} runs, {args.segments} x {args.segment_mb} MB")
    print(f"{'path':<44} {'median MB/s':>12}   runs")
    print(f"{'offload: MicroPython recorder -> vault':<44} {off_med:>12.1f}   "
          + " ".join(f"{x:.1f}" for x in result["offload_mb_per_s"]))
    print(f"{'raw paho: 32 KiB QoS 1 publisher -> subscriber':<44} {raw_med:>12.1f}   "
          + " ".join(f"{x:.1f}" for x in result["raw_paho_mb_per_s"]))
    print(f"offload / raw = {result['ratio_offload_to_raw']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
