"""riskguard message and configuration schemas (pydantic v2)."""
