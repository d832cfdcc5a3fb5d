"""The one LightningModule that trains every restoration model."""
