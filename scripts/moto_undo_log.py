"""Makes moto's DynamoDB TransactWriteItems cost what the transaction touches, not what the tables hold.

moto (5.x) deep-copies every table a transaction names before it runs, so that it can put the copy back if
the transaction is cancelled. That is O(table size) per transaction: a test that writes 500 requests spends
most of its time copying the audit table, and the serialized emulator falls behind the SDK's timeouts.

`install()` keeps moto's transaction logic and replaces only that snapshot with an undo log: before the
transaction it copies the items the transaction will touch (one `Item` each, or "absent"), and if moto
raises (a cancellation, a validation error) it puts exactly those back. The outcome is the same as moto's:
all of the transaction or none of it. It relies on the emulator serving one request at a time
(scripts/moto_serial.py), as moto's own snapshot does. If moto's internals are not what this expects, it
leaves moto alone and says so on stderr: the tests are then slower, not wrong.
"""
import copy
import sys
import threading


def _warn(what):
    print(f"moto_undo_log: {what}; keeping moto's whole-table snapshots", file=sys.stderr)


def install():
    try:
        from moto.dynamodb import models
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.table import Table
    except Exception as e:  # noqa: BLE001 - any import problem means: leave moto as it is
        _warn(f"cannot import moto's DynamoDB models ({e})")
        return False
    original = getattr(DynamoDBBackend, "transact_write_items", None)
    if original is None or getattr(models, "copy", None) is not copy:
        _warn("moto's transact_write_items is not the one this was written for")
        return False

    active = threading.local()

    class _CopyButNotTables:
        """`copy` as moto's models module sees it: tables are not copied while a transaction runs."""

        def __getattr__(self, name):
            return getattr(copy, name)

        @staticmethod
        def deepcopy(x, memo=None):
            if getattr(active, "on", False) and isinstance(x, Table):
                return x
            return copy.deepcopy(x, memo)

    def touched(backend, transact_items):
        """(table, hash key, range key, copy of the item or None) for each item the transaction names."""
        log = []
        for entry in transact_items:
            try:
                op_type, op = next(iter(entry.items()))
                table = backend.get_table(op["TableName"])
                if op_type == "Put":
                    attrs = op["Item"]
                    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = attrs[table.range_key_attr]
                else:
                    key = op["Key"]
                hash_key, range_key = backend.get_keys_value(table, key)
                log.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
            except Exception:  # noqa: BLE001 - moto itself rejects this item before changing anything
                continue
        return log

    def restore(log):
        for table, hash_key, range_key, item in reversed(log):
            if item is None:
                try:
                    table.delete_item(hash_key, range_key)
                except KeyError:
                    pass
            elif range_key is not None:
                table.items[hash_key][range_key] = item
            else:
                table.items[hash_key] = item

    def transact_write_items(self, transact_items):
        log = touched(self, transact_items)
        active.on = True
        try:
            return original(self, transact_items)
        except BaseException:
            restore(log)
            raise
        finally:
            active.on = False

    models.copy = _CopyButNotTables()
    DynamoDBBackend.transact_write_items = transact_write_items
    return True
