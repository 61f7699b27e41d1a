"""Command-line client of the imaging data marketplace (standard library only).

    mkt fetch ORDER DEST   download an order's delivery, resume, verify every sha256
    mkt verify DEST        check a downloaded folder against its manifest.csv
"""
from marketplace_client.api import AccessError, Api, ClientError, DiskFullError
from marketplace_client.transfer import FetchResult, VerifyReport, fetch, verify

__all__ = ["AccessError", "Api", "ClientError", "DiskFullError", "FetchResult", "VerifyReport", "fetch", "verify"]
