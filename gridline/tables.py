"""Every table of Gridline, for what needs the whole schema at once: the migrations
(``migrations/env.py``, the models-match-migrations test) and the tests' truncation between
PostgreSQL tests. Each room keeps its tables in its own ``models`` module (the core's rooms,
and the console's and the channels' tables in their packages); importing them here puts them
all on ``SQLModel.metadata``. The composition root owns this list because only it may import
the channels and the console as well as the core."""

import chat.models  # noqa: F401
import console.models  # noqa: F401
import core.cases.models  # noqa: F401
import core.deadlines.models  # noqa: F401
import core.followup.models  # noqa: F401
import core.people.models  # noqa: F401
import core.places.models  # noqa: F401
import core.platform.models  # noqa: F401
import ivr.models  # noqa: F401
