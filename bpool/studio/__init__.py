"""Driving Google AI Studio (or the local simulator) in a real browser.

- `stream_parser`: incremental parser of the GenerateContent streamed body (sans-IO).
- `profiles`: loading and validating cookie files (Playwright storage state).
- `engines`: choosing, launching and reaping the browser (Camoufox or Chromium).
- `driver`: the page steps, with every selector and URL pattern in one table.
"""
