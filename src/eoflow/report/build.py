"""Stage ``report`` (placeholder replaced below)."""
def run_report(ctx):
    return None
