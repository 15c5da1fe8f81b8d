"""`kubetune-operator`: runs the kopf operator for FineTuneJobs."""
from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Callable

import kopf

from kubetune_operator import identity, webhook
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger("kubetune.operator")
# kopf ends its whole run on some watch errors, such as a 404 while a restarted API server does
# not serve the CRDs yet (nolar/kopf#1108). Like controller-runtime's informers, the operator
# keeps going: it starts kopf again after a pause. Failing over and over, it exits, and the
# Deployment's restarts (with back-off) take over.
RESTART_PAUSE_SECONDS = 5.0
MAX_RESTARTS, RESTART_WINDOW_SECONDS = 5, 600.0


def _webhook_flags(parser: argparse.ArgumentParser, defaults: OperatorSettings) -> None:
    group = parser.add_argument_group("validating admission webhook")
    group.add_argument("--webhook-port", type=int, default=defaults.webhook_port,
                       help="HTTPS port of the webhook (env KUBETUNE_WEBHOOK_PORT); 0 (default) disables it")
    group.add_argument("--webhook-address", default=defaults.webhook_address, help="bind address (env KUBETUNE_WEBHOOK_ADDRESS)")
    group.add_argument("--webhook-host", default=defaults.webhook_host,
                       help="the API server calls https://HOST:PORT: an operator outside the cluster "
                            "(env KUBETUNE_WEBHOOK_HOST); self-managed mode only")
    group.add_argument("--webhook-service", default=defaults.webhook_service, metavar="NAMESPACE/NAME[:PORT]",
                       help="the API server calls the webhook through this Service, port 443 unless given "
                            "(env KUBETUNE_WEBHOOK_SERVICE); self-managed mode only")
    group.add_argument("--webhook-cert-file", default=defaults.webhook_cert_file, metavar="PEM",
                       help="serving certificate (the chart's Secret, mounted; env KUBETUNE_WEBHOOK_CERT_FILE): with "
                            "--webhook-key-file the operator serves with it and never touches the "
                            "ValidatingWebhookConfiguration, which the installer owns")
    group.add_argument("--webhook-key-file", default=defaults.webhook_key_file, metavar="PEM",
                       help="its private key (env KUBETUNE_WEBHOOK_KEY_FILE)")
    group.add_argument("--webhook-configuration", default=defaults.webhook_configuration,
                       help="without a certificate file (development: an operator outside the cluster), the "
                            "ValidatingWebhookConfiguration the operator points at itself with its own CA "
                            "(env KUBETUNE_WEBHOOK_CONFIGURATION)")
    group.add_argument("--webhook-failure-policy", choices=webhook.FAILURE_POLICIES, default=defaults.webhook_failure_policy,
                       help="what the API server does when the webhook cannot answer: Fail refuses, Ignore admits "
                            "(env KUBETUNE_WEBHOOK_FAILURE_POLICY)")
    group.add_argument("--webhook-timeout", type=int, default=defaults.webhook_timeout,
                       help="seconds the API server waits for an answer, 1-30 (env KUBETUNE_WEBHOOK_TIMEOUT)")


def _check_webhook(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.webhook_failure_policy not in webhook.FAILURE_POLICIES:
        parser.error(f"--webhook-failure-policy must be one of {', '.join(webhook.FAILURE_POLICIES)}")
    if not 1 <= args.webhook_timeout <= 30:
        parser.error("--webhook-timeout must be between 1 and 30 seconds")
    if bool(args.webhook_cert_file) != bool(args.webhook_key_file):
        parser.error("--webhook-cert-file and --webhook-key-file go together")
    if args.webhook_cert_file:
        if args.webhook_host or args.webhook_service:
            parser.error("--webhook-host and --webhook-service are for the self-managed mode: with "
                         "--webhook-cert-file the ValidatingWebhookConfiguration is the installer's")
        return
    try:
        webhook.Target.parse(args.webhook_port, args.webhook_host, args.webhook_service)
    except ValueError as error:
        parser.error(str(error))


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
    parser.add_argument("--operator-username", default=defaults.operator_username,
                        help="the operator's own username, the only one the status webhook lets write a job's status "
                             "(env KUBETUNE_OPERATOR_USERNAME); default: from its credentials (a ServiceAccount "
                             "token's subject or a client certificate's CN)")
    _webhook_flags(parser, defaults)
    args = parser.parse_args(argv)
    if args.webhook_port:
        _check_webhook(parser, args)
    return OperatorSettings(namespaces=args.namespace, metrics_port=args.metrics_port, metrics_address=args.metrics_address,
                            health_port=args.health_port, trainer_image=args.trainer_image, workers=args.workers,
                            gpu_hour_price=args.gpu_hour_price, currency=args.currency, verbose=args.verbose,
                            webhook_port=args.webhook_port, webhook_address=args.webhook_address,
                            webhook_host=args.webhook_host, webhook_service=args.webhook_service,
                            webhook_configuration=args.webhook_configuration,
                            webhook_failure_policy=args.webhook_failure_policy, webhook_timeout=args.webhook_timeout,
                            webhook_cert_file=args.webhook_cert_file, webhook_key_file=args.webhook_key_file,
                            operator_username=args.operator_username)


def resolve_identity(settings: OperatorSettings) -> OperatorSettings:
    """settings with the operator's username (identity.py); exits when the status webhook is on
    and nothing says who the operator is (it would refuse the operator's own status writes)."""
    settings = identity.with_username(settings)
    if settings.operator_username:
        logging.getLogger("kubetune.operator").info(f"the operator's username: {settings.operator_username}")
    elif settings.webhook_port:
        raise SystemExit("kubetune-operator: its credentials do not say its username (neither a ServiceAccount "
                         "token nor a client certificate): set --operator-username or KUBETUNE_OPERATOR_USERNAME, "
                         "which the status webhook lets alone write a job's status")
    return settings


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    kopf.configure(verbose=settings.verbose, log_prefix=True)
    if not settings.verbose:
        # kopf logs every handler run at INFO; keep the log to what the operator decides.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from kubetune_operator import handlers  # noqa: F401  registers the handlers
    if settings.webhook_port:
        from kubetune_operator import admission  # noqa: F401  registers the validating webhook
    settings = resolve_identity(settings)

    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    run_restarting(lambda: asyncio.run(kopf.operator(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=True,  # one replica (Recreate strategy); no kopf peering CRDs needed
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=settings),
    )))


def run_restarting(run: Callable[[], None], sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Calls run() until it returns (a stop signal). When it raises, calls it again after a pause,
    unless that was its (MAX_RESTARTS + 1)th failure within RESTART_WINDOW_SECONDS: then the error ends the process."""
    failures: list[float] = []
    while True:
        try:
            run()
            return
        except Exception as exc:  # noqa: BLE001 - kopf stops on any error of its root tasks
            now = clock()
            failures = [t for t in failures if now - t < RESTART_WINDOW_SECONDS] + [now]
            if len(failures) > MAX_RESTARTS:
                raise
            log.error(f"kopf stopped ({type(exc).__name__}: {exc}); starting it again in {RESTART_PAUSE_SECONDS:g} s "
                      f"(restart {len(failures)} of at most {MAX_RESTARTS} in {RESTART_WINDOW_SECONDS:g} s)")
            sleep(RESTART_PAUSE_SECONDS)


if __name__ == "__main__":
    main()
