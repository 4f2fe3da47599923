"""The reviewer web console: Jinja2 pages, a small stylesheet and vendored HTMX."""
