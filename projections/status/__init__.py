"""The status projection: view tables of approvals and their timelines, and the queries on them."""
