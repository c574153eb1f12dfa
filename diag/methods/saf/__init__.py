"""Sharpness-Aware Training for Free: SAF and MESA (see :mod:`.trajectory`)."""
