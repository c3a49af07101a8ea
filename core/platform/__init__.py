"""Platform: the machinery every room stands on: settings, rules, the clock, the database and
its threads, durable jobs and their runner, instances and wake-ups, the media store and its
uploads, log context."""
