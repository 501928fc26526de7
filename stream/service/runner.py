"""The worker process: logging, the health server, waiting for Kafka, then faust until a signal."""

from __future__ import annotations

import asyncio
import logging

import faust

from stream.service.health import serve
from stream.service.quietlog import QuietFilter, install
from stream.service.settings import Settings
from stream.service.clients import wait_for_kafka
from stream.service.worker import EnrichmentWorker

log = logging.getLogger("tagstream.worker")


class Worker(faust.Worker):
    """faust's worker; its logging setup replaces the root handlers, so the quiet filter goes on again.
    Named Worker: faust logs as "[^Worker]: Ready", which scripts and the tests wait for."""

    quiet: QuietFilter | None = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if self.quiet is not None:
            install(logger, self.quiet)


def run_worker(settings: Settings) -> int:
    """Load the bundle, bind the metrics and health port, wait for Kafka and create the topics, then
    run until SIGINT/SIGTERM. Each step that fails ends the worker in one line before the next one
    changes anything (no topics are created for a worker that cannot start)."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiokafka's debug log spells out the SASL/SCRAM exchange (salt, nonces, proof): never below INFO.
    logging.getLogger("aiokafka").setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
    quiet = QuietFilter(settings.log_summary_seconds)
    install(logging.getLogger(), quiet)
    worker = EnrichmentWorker(settings)
    if settings.metrics_port:
        serve(settings.metrics_port, worker.health)
    # A private loop: asyncio.run would unset the current loop, which the faust app made above may hold.
    loop = asyncio.new_event_loop()
    try:
        created = loop.run_until_complete(wait_for_kafka(settings, alive=worker.health.starting))
    finally:
        loop.close()
    if created:
        log.info("created topics %s", ", ".join(created))

    async def flush_log_summary() -> None:      # the last summary of an outage, without a next line
        quiet.flush()

    async def close_lag_client(app, **kwargs) -> None:
        await worker.close_lag_client()

    worker.app.timer(1.0)(worker.heartbeat)
    if settings.log_summary_seconds:
        worker.app.timer(settings.log_summary_seconds)(flush_log_summary)
    worker.app.on_before_shutdown.connect(close_lag_client)
    log.info("worker %s starting with %s", worker.worker_id, settings)
    faust_worker = Worker(worker.app, loglevel=settings.log_level.upper(), quiet=True)
    faust_worker.quiet = quiet
    faust_worker.execute_from_commandline()
    return 0
