"""Cron: expressions (pure), schedules as declared and the rules of firing them (pure), and the leaderless
scheduler every worker runs (through the store)."""
