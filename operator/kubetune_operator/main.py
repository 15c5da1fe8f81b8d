"""`kubetune-operator`: runs the kopf operator for FineTuneJobs."""
from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from kubetune_operator.settings import OperatorSettings


def parse_args(argv: list[str] | None = None) -> OperatorSettings:
    defaults = OperatorSettings()
    parser = argparse.ArgumentParser(prog="kubetune-operator", description="Reconciles kubetune.io FineTuneJobs and EvalJobs.")
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port, help="Prometheus /metrics port; 0 disables")
    parser.add_argument("--metrics-address", default=defaults.metrics_address)
    parser.add_argument("--health-port", type=int, default=defaults.health_port, help="liveness /healthz port; 0 disables")
    parser.add_argument("--trainer-image", default=defaults.trainer_image,
                        help="image of trainer and evaluator pods whose spec sets none (env KUBETUNE_TRAINER_IMAGE)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="threads for handlers")
    parser.add_argument("--gpu-hour-price", type=float, default=defaults.gpu_hour_price,
                        help="price of one GPU-hour for status.usage.estimatedCost (env KUBETUNE_GPU_HOUR_PRICE); default: no cost")
    parser.add_argument("--currency", default=defaults.currency, help="currency of that price (env KUBETUNE_CURRENCY)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every handler run")
    args = parser.parse_args(argv)
    return OperatorSettings(namespaces=args.namespace, metrics_port=args.metrics_port, metrics_address=args.metrics_address,
                            health_port=args.health_port, trainer_image=args.trainer_image, workers=args.workers,
                            gpu_hour_price=args.gpu_hour_price, currency=args.currency, verbose=args.verbose)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    kopf.configure(verbose=settings.verbose, log_prefix=True)
    if not settings.verbose:
        # kopf logs every handler run at INFO; keep the log to what the operator decides.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from kubetune_operator import handlers  # noqa: F401  registers the handlers

    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    asyncio.run(kopf.operator(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=True,  # one replica (Recreate strategy); no kopf peering CRDs needed
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=settings),
    ))


if __name__ == "__main__":
    main()
