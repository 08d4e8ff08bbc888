"""Every AWS request of fruits-emr goes through `Aws.call`: the one place
that knows the region (checked against Europe before the first request) and
that, with --dry-run, prints each request exactly as it would be sent, and
sends nothing."""

import json
import sys

from .regions import Europe


def render(service: str, operation: str, params: dict) -> str:
    return f"aws {service} {operation} {json.dumps(params, sort_keys=True, default=str)}"


class Aws:
    def __init__(self, region: str, europe: Europe, dry_run: bool = False, out=None):
        self.region = europe.check(region)  # raises before any client exists
        self.europe = europe
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self._clients = {}

    def client(self, service: str):
        if service not in self._clients:
            import boto3  # only when a request is really made

            self._clients[service] = boto3.client(service, region_name=self.region)
        return self._clients[service]

    def call(self, service: str, operation: str, **params):
        """Sends `operation` (its API name, e.g. RunJobFlow); with --dry-run
        prints it and returns None."""
        if self.dry_run:
            print(render(service, operation, params), file=self.out, flush=True)
            return None
        from botocore import xform_name

        return getattr(self.client(service), xform_name(operation))(**params)
