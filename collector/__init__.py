"""iscsi-audit: an audit trail of iSCSI logins on NetApp ONTAP clusters."""

__version__ = "0.1.0"
