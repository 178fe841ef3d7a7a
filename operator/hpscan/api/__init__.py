"""The hpscan API: the HPScan resource and the payload contract, as pydantic models."""
