"""`kubetune-operator`: runs the kopf operator for FineTuneJobs."""
from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from kubetune_operator import webhook
from kubetune_operator.settings import OperatorSettings


def _webhook_flags(parser: argparse.ArgumentParser, defaults: OperatorSettings) -> None:
    group = parser.add_argument_group("validating admission webhook")
    group.add_argument("--webhook-port", type=int, default=defaults.webhook_port,
                       help="HTTPS port of the webhook (env KUBETUNE_WEBHOOK_PORT); 0 (default) disables it")
    group.add_argument("--webhook-address", default=defaults.webhook_address, help="bind address (env KUBETUNE_WEBHOOK_ADDRESS)")
    group.add_argument("--webhook-host", default=defaults.webhook_host,
                       help="the API server calls https://HOST:PORT: an operator outside the cluster or on the host network "
                            "(env KUBETUNE_WEBHOOK_HOST)")
    group.add_argument("--webhook-service", default=defaults.webhook_service, metavar="NAMESPACE/NAME[:PORT]",
                       help="the API server calls the webhook through this Service, port 443 unless given "
                            "(env KUBETUNE_WEBHOOK_SERVICE)")
    group.add_argument("--webhook-configuration", default=defaults.webhook_configuration,
                       help="name of the ValidatingWebhookConfiguration the operator keeps (env KUBETUNE_WEBHOOK_CONFIGURATION)")
    group.add_argument("--webhook-failure-policy", choices=webhook.FAILURE_POLICIES, default=defaults.webhook_failure_policy,
                       help="what the API server does when the webhook cannot answer: Fail refuses, Ignore admits "
                            "(env KUBETUNE_WEBHOOK_FAILURE_POLICY)")
    group.add_argument("--webhook-timeout", type=int, default=defaults.webhook_timeout,
                       help="seconds the API server waits for an answer, 1-30 (env KUBETUNE_WEBHOOK_TIMEOUT)")


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
    _webhook_flags(parser, defaults)
    args = parser.parse_args(argv)
    if args.webhook_port:
        if args.webhook_failure_policy not in webhook.FAILURE_POLICIES:
            parser.error(f"--webhook-failure-policy must be one of {', '.join(webhook.FAILURE_POLICIES)}")
        if not 1 <= args.webhook_timeout <= 30:
            parser.error("--webhook-timeout must be between 1 and 30 seconds")
        try:
            webhook.Target.parse(args.webhook_port, args.webhook_host, args.webhook_service)
        except ValueError as error:
            parser.error(str(error))
    return OperatorSettings(namespaces=args.namespace, metrics_port=args.metrics_port, metrics_address=args.metrics_address,
                            health_port=args.health_port, trainer_image=args.trainer_image, workers=args.workers,
                            gpu_hour_price=args.gpu_hour_price, currency=args.currency, verbose=args.verbose,
                            webhook_port=args.webhook_port, webhook_address=args.webhook_address,
                            webhook_host=args.webhook_host, webhook_service=args.webhook_service,
                            webhook_configuration=args.webhook_configuration,
                            webhook_failure_policy=args.webhook_failure_policy, webhook_timeout=args.webhook_timeout)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    kopf.configure(verbose=settings.verbose, log_prefix=True)
    if not settings.verbose:
        # kopf logs every handler run at INFO; keep the log to what the operator decides.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from kubetune_operator import handlers  # noqa: F401  registers the handlers
    if settings.webhook_port:
        from kubetune_operator import admission  # noqa: F401  registers the validating webhook

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
