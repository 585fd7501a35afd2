"""Ways of running work, one module each, behind one contract: ``_engine.contract``
(``Backend``) for the sync engine."""
