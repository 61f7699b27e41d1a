import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('marketplace', '0007_organization_money_fields'),
    ]

    operations = [
        migrations.CreateModel(
            name='LedgerAccount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('cash', "Cash (the platform's Stripe balance)"), ('buyer_receivable', 'Buyer receivable (invoiced, not yet paid)'), ('provider_payable', 'Provider payable (owed to a provider)'), ('provider_receivable', 'Provider receivable (a provider owes the platform)'), ('platform_revenue', 'Platform revenue (fees)'), ('stripe_fees', 'Stripe fees (processing fees paid)')], max_length=24)),
                ('currency', models.CharField(max_length=3)),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
                ('provider', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='ledger_accounts', to='marketplace.organization')),
            ],
            options={
                'ordering': ['currency', 'kind', 'provider_id'],
            },
        ),
        migrations.CreateModel(
            name='LedgerTransaction',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('charge', 'Charge (card payment)'), ('invoice_issued', 'Invoice issued'), ('invoice_paid', 'Invoice paid'), ('transfer', 'Transfer to a provider'), ('refund', 'Refund'), ('transfer_reversal', 'Transfer reversal'), ('reversal_shortfall', 'Reversal shortfall (provider owes the rest)'), ('receivable_netting', 'Receivable netted against payable'), ('stripe_fee', 'Stripe processing fee'), ('adjustment', 'Adjustment')], max_length=24)),
                ('reference', models.CharField(max_length=200, unique=True)),
                ('order_id', models.BigIntegerField(blank=True, db_index=True, null=True)),
                ('order_line_id', models.BigIntegerField(blank=True, null=True)),
                ('currency', models.CharField(max_length=3)),
                ('memo', models.CharField(blank=True, max_length=500)),
                ('created', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
            ],
            options={
                'ordering': ['-created', '-id'],
                'constraints': [models.CheckConstraint(condition=models.Q(('currency__regex', '^[A-Z]{3}$')), name='ledger_transaction_currency_iso'), models.CheckConstraint(condition=models.Q(('reference', ''), _negated=True), name='ledger_transaction_reference_set')],
            },
        ),
        migrations.CreateModel(
            name='LedgerEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('amount_minor', models.BigIntegerField(help_text='Minor units; debit positive, credit negative.')),
                ('currency', models.CharField(max_length=3)),
                ('account', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='entries', to='ledger.ledgeraccount')),
                ('transaction', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='entries', to='ledger.ledgertransaction')),
            ],
            options={
                'verbose_name_plural': 'ledger entries',
                'ordering': ['id'],
            },
        ),
        migrations.AddConstraint(
            model_name='ledgeraccount',
            constraint=models.UniqueConstraint(fields=('kind', 'provider', 'currency'), name='ledger_account_unique_kind_provider_currency', nulls_distinct=False),
        ),
        migrations.AddConstraint(
            model_name='ledgeraccount',
            constraint=models.CheckConstraint(condition=models.Q(('currency__regex', '^[A-Z]{3}$')), name='ledger_account_currency_iso'),
        ),
        migrations.AddConstraint(
            model_name='ledgeraccount',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('kind__in', ('provider_payable', 'provider_receivable')), ('provider__isnull', False)), models.Q(('kind__in', ('cash', 'buyer_receivable', 'stripe_fees')), ('provider__isnull', True)), ('kind', 'platform_revenue'), _connector='OR'), name='ledger_account_provider_matches_kind'),
        ),
        migrations.AddConstraint(
            model_name='ledgerentry',
            constraint=models.CheckConstraint(condition=models.Q(('amount_minor', 0), _negated=True), name='ledger_entry_amount_not_zero'),
        ),
    ]
