"""Incremental Processing Support: IpCapture, ICDC tables, patterns, IpCommit."""
