"""Ways of running work, one module each, behind the contract of ``_engine.Engine``."""
