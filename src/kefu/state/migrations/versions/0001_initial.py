"""Every store's tables in the shared database: api keys, consent records, the audit chain and its head, feedback,
the knowledge graph and the model registry.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('key_id', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('role', sa.String(), nullable=False),
    sa.Column('digest', sa.String(), nullable=False),
    sa.Column('created_at', sa.String(), nullable=False),
    sa.Column('created_by', sa.String(), nullable=False),
    sa.Column('revoked_at', sa.String(), nullable=True),
    sa.Column('customer_id', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('key_id')
    )
    audit_head = op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    # the chain's anchor: no entry yet, linked to the genesis digest
    op.bulk_insert(audit_head, [{"id": 1, "count": 0, "digest": "0" * 64}])
    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('entry', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('datasets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('path', sa.String(), nullable=False),
    sa.Column('digest', sa.String(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('legal_basis', sa.String(), nullable=False),
    sa.Column('consent', sa.Boolean(), nullable=False),
    sa.Column('privacy_notice', sa.Boolean(), nullable=False),
    sa.Column('registered_by', sa.String(), nullable=False),
    sa.Column('registered_at', sa.String(), nullable=False),
    sa.Column('note', sa.String(), nullable=True),
    sa.Column('derived_from', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_datasets_digest'), 'datasets', ['digest'], unique=False)
    op.create_index(op.f('ix_datasets_path'), 'datasets', ['path'], unique=False)
    op.create_table('feedback',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('session_id', sa.String(length=128), nullable=True),
    sa.Column('message_id', sa.String(length=128), nullable=True),
    sa.Column('model', sa.String(length=128), nullable=True),
    sa.Column('rating', sa.Integer(), nullable=True),
    sa.Column('correction', sa.Text(), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=True),
    sa.Column('conversation', sa.JSON(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_feedback_created_at'), 'feedback', ['created_at'], unique=False)
    op.create_index(op.f('ix_feedback_session_id'), 'feedback', ['session_id'], unique=False)
    op.create_table('kg_faq',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('answer', sa.Text(), nullable=False),
    sa.Column('intent', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('kg_meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('kg_orders',
    sa.Column('order_no', sa.String(length=32), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('tracking_no', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('order_no')
    )
    op.create_index(op.f('ix_kg_orders_customer_id'), 'kg_orders', ['customer_id'], unique=False)
    op.create_index(op.f('ix_kg_orders_tracking_no'), 'kg_orders', ['tracking_no'], unique=False)
    op.create_table('kg_playbooks',
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('type')
    )
    op.create_table('kg_policies',
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('category')
    )
    op.create_table('kg_products',
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('brand', sa.String(length=100), nullable=False),
    sa.Column('price_fen', sa.Integer(), nullable=False),
    sa.Column('stock', sa.Integer(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('sku')
    )
    op.create_index(op.f('ix_kg_products_category'), 'kg_products', ['category'], unique=False)
    op.create_table('kg_promotions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('kg_relations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('relation', sa.String(length=32), nullable=False),
    sa.Column('target_sku', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sku', 'relation', 'target_sku')
    )
    op.create_index(op.f('ix_kg_relations_sku'), 'kg_relations', ['sku'], unique=False)
    op.create_table('kg_tickets',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('order_no', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_kg_tickets_customer_id'), 'kg_tickets', ['customer_id'], unique=False)
    op.create_table('registry_promotions',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('time', sa.String(length=40), nullable=False),
    sa.Column('from_version', sa.String(length=32), nullable=True),
    sa.Column('to_version', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('registry_versions',
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('entry', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('position'),
    sa.UniqueConstraint('version')
    )


def downgrade() -> None:
    op.drop_table('registry_versions')
    op.drop_table('registry_promotions')
    op.drop_table('kg_tickets')
    op.drop_table('kg_relations')
    op.drop_table('kg_promotions')
    op.drop_table('kg_products')
    op.drop_table('kg_policies')
    op.drop_table('kg_playbooks')
    op.drop_table('kg_orders')
    op.drop_table('kg_meta')
    op.drop_table('kg_faq')
    op.drop_table('feedback')
    op.drop_table('datasets')
    op.drop_table('audit_log')
    op.drop_table('audit_head')
    op.drop_table('api_keys')
