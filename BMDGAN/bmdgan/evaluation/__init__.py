"""The paper's evaluation: agreement metrics, precision across poses, Bland-Altman and correlation plots."""
