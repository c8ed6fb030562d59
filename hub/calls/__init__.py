"""Calls (共享调用): single records answered from the hub's materialised tables of current records."""
