"""The tamper-evident audit log: the hash chain (``chain``, pure) and its verification shell (``verify``)."""
