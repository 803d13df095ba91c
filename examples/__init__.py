"""Examples built on riskguard: an execution service on the client (`execution_service.py`)."""
