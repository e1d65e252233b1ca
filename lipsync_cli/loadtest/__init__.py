"""`lipsync loadtest`: many live sessions against a server, with every figure of design.md section 16."""
