"""Is a sending subdomain's DNS ready? The checks, and the stored verdicts that block sending."""
