"""The estimate job: load a trained model (``model``), decompose a radiograph and read its BMD (``estimation``),
T-score and WHO category (``tscore``), the report picture (``report``) and where the default model lives
(``default_model``)."""
