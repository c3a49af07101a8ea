"""The ``gridline`` commands, one module per part of Gridline (serve, the database, the demo
district, grids, cases, speech, the hotline simulator, staff chats, reports, the background job
processes, the follow-up call …). ``gridline.cli.COMMANDS`` names them; each module is imported
only when its command runs."""
