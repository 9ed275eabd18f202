"""Helpers for the end-to-end browser test: a DevTools-protocol driver for Debian's headless Chromium,
a .y4m writer for its fake camera, and the page walk-through shared by the test and the screenshot script."""
