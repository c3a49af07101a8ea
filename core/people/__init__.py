"""People: staff chats, who owns a case at a level, phone numbers, personal data masking, the
audit trail, and Open311 keys."""
