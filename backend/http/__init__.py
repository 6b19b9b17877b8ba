"""HTTP plumbing every domain's views use: request resources as dependencies, error mapping,
body size limits, text validation and security headers. Knows no domain."""
