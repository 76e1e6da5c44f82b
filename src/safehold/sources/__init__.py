"""What a plan backs up: one interface (`base.Source`), one module per kind of source."""
