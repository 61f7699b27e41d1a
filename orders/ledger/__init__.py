"""Double-entry ledger of the marketplace's money (app label ``ledger``).

Amounts are integers in the currency's minor unit (cents, yen, fils); every transaction's
entries sum to zero and the tables are append-only, both enforced by the database.
"""
